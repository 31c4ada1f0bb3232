# vpnmasq_tun: Linux TUN I/O for the supervisor (see src/tun/addon.cc).
# Node headers come from node-gyp's nodedir (npm passes npm_config_nodedir,
# here /usr from ~/.npmrc, so the build never downloads headers).
{
  "targets": [
    {
      "target_name": "vpnmasq_tun",
      "sources": ["src/tun/addon.cc", "src/tun/ringclock.cc", "src/tun/fastpath.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS"],
      # common.gypi builds Release with -O3; -O2 is plenty for syscall glue.
      "cflags!": ["-O3"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "conditions": [
        # TUN is Linux-only; elsewhere build nothing so `npm install` still
        # succeeds and TunDevice.open() reports the missing addon.
        ["OS!='linux'", {"type": "none", "sources!": ["src/tun/addon.cc", "src/tun/ringclock.cc", "src/tun/fastpath.cc"]}]
      ]
    }
  ]
}
