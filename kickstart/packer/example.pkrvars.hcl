# Example variables for rocky9.pkr.hcl; copy, then pin your ISO and package.
iso_url      = "Rocky-9-x86_64-boot.iso"
iso_checksum = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
rpm_name     = "gitops-0.2.0-1.x86_64.rpm"
rpm_sha256   = "0000000000000000000000000000000000000000000000000000000000000000"
