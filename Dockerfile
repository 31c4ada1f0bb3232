# vpnmasq in a container: a build stage (Node 20, AssemblyScript, node-gyp)
# and a slim runtime stage. Every RUN command below is one CI runs too:
# test/firmware/files.test.ts runs the build stage's commands in a copy of
# the files this stage copies, and .ci/run runs the apt-get ones.
#
#   docker build -t vpnmasq .
#   docker run -d --name vpnmasq --network host --cap-add NET_ADMIN --device /dev/net/tun \
#     --security-opt systempaths=unconfined --security-opt apparmor=unconfined \
#     -v /etc/vpnmasq.conf:/etc/config/vpnmasq:ro vpnmasq
#   docker exec vpnmasq node /opt/vpnmasq/dist/cli/main.js status
#
# --network host: vpnmasq routes the host's own LAN and WAN devices.
# NET_ADMIN and /dev/net/tun: its TUN devices, routes, rules and neighbours.
# The two --security-opt: Docker mounts /proc/sys read-only and its AppArmor
# profile denies writes there, but vpnmasq sets per-device sysctls
# (rp_filter, accept_local, proxy_delay) of TUNs it creates at run time,
# which --sysctl cannot set beforehand (--privileged also does it).

FROM node:20-bookworm AS build
WORKDIR /src
# node-gyp builds the addon against the image's own Node headers
# (/usr/local/include/node) instead of downloading them.
ENV npm_config_nodedir=/usr/local \
    npm_config_audit=false \
    npm_config_fund=false \
    npm_config_update_notifier=false
COPY package.json package-lock.json ./
# `npm install` with the lockfile rather than `npm ci`: package-lock.json
# lacks entries for rollup's optional per-platform packages (a dev
# dependency through vitest), which `npm ci` refuses.
RUN npm install --ignore-scripts
COPY binding.gyp asconfig.json tsconfig.json ./
COPY assembly ./assembly
COPY src ./src
RUN npm run build:addon
RUN npm run build
RUN npm prune --omit=dev

FROM node:20-bookworm-slim
# iproute2: vpnmasq drives `ip` (routes, rules, TUN addresses, the WAN
# address watch); nftables: `nft` for the fail-closed guard and the marks of
# WAN-bound traffic; procps: ps and sysctl for looking around.
RUN apt-get update \
    && apt-get install -y --no-install-recommends iproute2 nftables procps \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/vpnmasq
COPY --from=build /src/package.json ./
COPY --from=build /src/dist ./dist
COPY --from=build /src/build/Release/vpnmasq_tun.node ./build/Release/
COPY --from=build /src/node_modules ./node_modules
COPY firmware/files/etc/config/vpnmasq /etc/config/vpnmasq
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s \
    CMD ["node", "/opt/vpnmasq/dist/cli/main.js", "status", "--config", "/etc/config/vpnmasq"]
ENTRYPOINT ["node", "/opt/vpnmasq/dist/cli/main.js"]
CMD ["run", "--config", "/etc/config/vpnmasq"]
