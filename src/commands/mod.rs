//! The commands besides `sync`: each reads the state directory, a repository or the CLI definition, and
//! returns an [`Outcome`](crate::outcome::Outcome).

pub mod check;
pub mod fleet;
#[cfg(feature = "generate")]
pub mod generate;
pub mod history;
pub mod install_units;
pub mod secrets;
pub mod status;
pub mod suspend;
pub mod verify;
