{
  "targets": [
    {
      "target_name": "vpnmasq_tun",
      "sources": ["src/tun/addon.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS"],
      "cflags!": ["-O3"],
      "cflags_cc!": ["-O3"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "cflags_cc": ["-O2", "-Wall", "-Wextra", "-fno-exceptions"],
      "conditions": [
        ["OS!='linux'", {"type": "none", "sources!": ["src/tun/addon.cc"]}]
      ]
    }
  ]
}
