//! Fleet settings, validated once from the fleet flags: inventory, teardown, reboot policy, FleetLock, splay.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail};

use crate::cli::FleetArgs;
use crate::inventory::{self, Inventory};
use crate::parse::parse_duration;
use crate::reboot::fleetlock;
use crate::reboot::window::Window;
use crate::reboot::{RebootSettings, Strategy};

/// The validated fleet part of the sync settings.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// Config root, host overrides, tags and the teardown script's name.
    pub inventory: Inventory,
    /// Skip the outgoing revision's teardown this once (`--skip-teardown`).
    pub skip_teardown: bool,
    /// When and how to reboot.
    pub reboot: RebootSettings,
    /// Longest random sleep before fetching; None = no splay.
    pub splay: Option<Duration>,
    /// Where rollout gates ask about the canaries (`--prometheus`).
    pub gate: Option<crate::rollout::gate::Source>,
}

impl FleetSettings {
    /// Validate the fleet flags for the host named `hostname`; every error names the flag, the reason and the fix.
    pub fn from_args(args: FleetArgs, hostname: &str) -> anyhow::Result<FleetSettings> {
        if !inventory::is_plain_name(hostname) {
            bail!("host name {hostname:?} cannot name a directory under hosts/; pass --host with a plain host name");
        }
        let root = match args.path.as_deref().map(str::trim) {
            None | Some("") => PathBuf::new(),
            Some(path) if inventory::is_inside_path(path) => PathBuf::from(path),
            Some(path) => bail!("--path {path:?} must be a directory inside the repository (relative, no '..')"),
        };
        let tags = inventory::parse_tags(args.tags.as_deref().unwrap_or_default())
            .map_err(|e| anyhow!("--tags: {e}; write e.g. --tags web,eu-west"))?;
        if !inventory::is_inside_path(&args.teardown) {
            bail!("--teardown {:?} must be a path next to the entrypoint (relative, no '..')", args.teardown);
        }
        let inventory = Inventory::new(root, hostname, tags, PathBuf::from(&args.teardown));

        let window = args
            .reboot_window
            .as_deref()
            .map(|text| Window::parse(text).map_err(|e| anyhow!("--reboot-window {e}")))
            .transpose()?;
        // Without an explicit strategy, the settings given imply it.
        let strategy = args.reboot_strategy.unwrap_or(match (&args.fleetlock_url, &window) {
            (Some(_), _) => Strategy::Fleetlock,
            (None, Some(_)) => Strategy::Window,
            (None, None) => Strategy::Immediate,
        });
        match strategy {
            Strategy::Window if window.is_none() => {
                bail!("--reboot-strategy window needs --reboot-window, e.g. --reboot-window \"Mon-Fri 02:00-04:00\"")
            }
            Strategy::Window if args.fleetlock_url.is_some() => {
                bail!("--fleetlock-url is not used by --reboot-strategy window; use --reboot-strategy fleetlock")
            }
            Strategy::Fleetlock if args.fleetlock_url.is_none() => {
                bail!("--reboot-strategy fleetlock needs --fleetlock-url URL (the FleetLock server, e.g. airlock)")
            }
            Strategy::Immediate if window.is_some() || args.fleetlock_url.is_some() => {
                bail!(
                    "--reboot-strategy immediate ignores --reboot-window and --fleetlock-url; drop them or pick window or fleetlock"
                )
            }
            _ => {}
        }
        if args.reboot_command.trim().is_empty() {
            bail!("--reboot-command is empty; use e.g. \"systemctl reboot --no-block\" or \"shutdown -r now\"");
        }
        let fleetlock = match (strategy, args.fleetlock_url) {
            (Strategy::Fleetlock, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    bail!("--fleetlock-url {url:?} is not an http:// or https:// URL");
                }
                let group = args.fleetlock_group.trim().to_string();
                if group.is_empty() || !group.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
                    bail!("--fleetlock-group {group:?} must be letters, digits, '-' and '.' (e.g. default or workers)");
                }
                let id = match args.fleetlock_id.map(|id| id.trim().to_string()) {
                    Some(id) if !id.is_empty() => id,
                    Some(_) => bail!("--fleetlock-id is empty; leave it out to use {}", fleetlock::MACHINE_ID),
                    None => fleetlock::machine_id()?,
                };
                Some(fleetlock::Client { url, group, id })
            }
            _ => None,
        };
        let splay = match args.splay.as_deref().map(str::trim) {
            None | Some("" | "0") => None,
            Some(text) => Some(
                parse_duration(text).map_err(|e| anyhow!("--splay {text:?}: {e}; use e.g. 90s or 5m (0 for none)"))?,
            ),
        };
        let matchers = crate::fleetview::prometheus::matchers("--prometheus-selector", &args.prometheus_selector)
            .map_err(|e| anyhow!(e))?;
        let gate = match args.prometheus.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                crate::redact::register_url(url);
                Some(crate::rollout::gate::Source { url: url.to_string(), matchers })
            }
            Some(url) => bail!("--prometheus {:?} is not an http:// or https:// URL", crate::redact::url(url)),
        };
        Ok(FleetSettings {
            inventory,
            skip_teardown: args.skip_teardown,
            reboot: RebootSettings { strategy, window, command: args.reboot_command, fleetlock },
            splay,
            gate,
        })
    }
}
