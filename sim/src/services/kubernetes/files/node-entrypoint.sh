#!/bin/sh
# A Kubernetes node in a container, without --privileged: make the cgroup
# hierarchies writable, mounts shared, the machine id unique, then systemd.
set -eu

# Docker mounts the container's cgroups read-only. With a private cgroup
# namespace a fresh mount shows only this container's subtree, so kubelet's pod
# cgroups nest under the node: a paused node freezes its pods, a killed node
# takes them with it.
remount_cgroups() {
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    umount /sys/fs/cgroup
    mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
    return
  fi
  hierarchies=$(awk '$3 == "cgroup" {print $2}' /proc/mounts | grep '^/sys/fs/cgroup/' || true)
  opts_of() { awk -v m="$1" '$2 == m {print $4}' /proc/mounts | tr ',' '\n' | grep -v -E '^(ro|rw|nosuid|nodev|noexec|relatime)$' | paste -sd, -; }
  plan=""
  for m in $hierarchies; do plan="$plan $m:$(opts_of "$m")"; done
  unified=$(awk '$3 == "cgroup2" && $2 ~ "^/sys/fs/cgroup/" {print $2}' /proc/mounts)
  for m in $hierarchies $unified; do umount "$m"; done
  umount /sys/fs/cgroup
  mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
  for entry in $plan; do
    m=${entry%%:*}; o=${entry#*:}
    mkdir -p "$m"
    mount -t cgroup -o "$o" cgroup "$m"
  done
  # Co-mounted controllers are reached by each name, as on a host.
  for m in $hierarchies; do
    case "$(basename "$m")" in *,*)
      for part in $(basename "$m" | tr ',' ' '); do [ -e "/sys/fs/cgroup/$part" ] || ln -s "$(basename "$m")" "/sys/fs/cgroup/$part"; done ;;
    esac
  done
  for m in $unified; do mkdir -p "$m"; mount -t cgroup2 cgroup2 "$m"; done
}

remount_cgroups
mount --make-rshared /
# kubeadm starts kubelet but does not enable it; a node that reboots (an AZ
# back from an outage) must start it again by itself.
systemctl enable kubelet.service >/dev/null 2>&1 || true
rm -f /etc/machine-id
systemd-machine-id-setup >/dev/null 2>&1 || true
exec /sbin/init
