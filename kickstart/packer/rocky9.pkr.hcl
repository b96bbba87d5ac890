# Packer template: a Rocky Linux 9 qcow2 image installed by kickstart/gitops.ks, which
# boots straight into gitops (timer enabled, configuration in /etc/gitops).
#
#   just dist                      # dist/gitops-VERSION-1.x86_64.rpm and dist/SHA256SUMS
#   mkdir -p build/http
#   cp kickstart/gitops.ks dist/gitops-*.x86_64.rpm build/http/   # edit the REPLACE-MEs first
#   rpm=$(cd dist && ls gitops-*.x86_64.rpm)
#   packer build -var-file=kickstart/packer/example.pkrvars.hcl -var rpm_name=$rpm \
#     -var rpm_sha256=$(grep " $rpm\$" dist/SHA256SUMS | cut -d' ' -f1) kickstart/packer
#
# Packer serves build/http to the installer over its own HTTP server; the kickstart checks the
# package's SHA-256 before installing it. No SSH communicator: the image has no root password
# and no login key, so the build simply waits for the installer to finish (-no-reboot turns
# the kickstart's final reboot into qemu exiting).
# Validate: packer validate -var-file=kickstart/packer/example.pkrvars.hcl kickstart/packer

variable "iso_url" {
  type        = string
  description = "Rocky Linux 9 boot or DVD ISO (x86_64)"
}

variable "iso_checksum" {
  type        = string
  description = "Its checksum, e.g. sha256:HEX, or file:URL of the CHECKSUM file"
}

variable "http_directory" {
  type        = string
  default     = "build/http"
  description = "Directory served to the installer: gitops.ks and the gitops RPM"
}

variable "rpm_name" {
  type        = string
  description = "File name of the gitops RPM in http_directory"
}

variable "rpm_sha256" {
  type        = string
  description = "SHA-256 of that RPM (hex); the kickstart refuses a package that does not match"
}

variable "output_directory" {
  type    = string
  default = "build/image"
}

variable "disk_size" {
  type    = string
  default = "10240M"
}

source "qemu" "rocky9" {
  iso_url          = var.iso_url
  iso_checksum     = var.iso_checksum
  output_directory = var.output_directory
  vm_name          = "gitops-rocky9.qcow2"
  format           = "qcow2"
  disk_size        = var.disk_size
  disk_interface   = "virtio"
  net_device       = "virtio-net"
  accelerator      = "kvm"
  headless         = true
  memory           = 2048
  cpus             = 2
  http_directory   = var.http_directory
  boot_wait        = "5s"
  # BIOS boot menu of the Rocky ISO: edit the default entry's kernel command line.
  boot_command = [
    "<tab> inst.text inst.ks=http://{{ .HTTPIP }}:{{ .HTTPPort }}/gitops.ks",
    " gitops.rpm=http://{{ .HTTPIP }}:{{ .HTTPPort }}/${var.rpm_name}",
    " gitops.rpm_sha256=${var.rpm_sha256}<enter>",
  ]
  qemuargs         = [["-no-reboot"]]
  communicator     = "none"
  shutdown_timeout = "90m"
}

build {
  sources = ["source.qemu.rocky9"]
}
