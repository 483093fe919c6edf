# kube-proxy programs the node's firewall, so it carries iptables and
# conntrack (Debian's, the same as the node's own).
FROM voyager-sim-base
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables conntrack ipset kmod \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY libs/kube-proxy /usr/local/bin/kube-proxy
