{
  "targets": [
    {
      "target_name": "lowbit_native",
      "sources": [
        "native/binding.cc",
        "native/cpu.cc",
        "native/threadpool.cc",
        "native/gemm.cc",
        "native/conv.cc",
        "native/dwconv.cc",
        "native/adder.cc",
        "native/convwide.cc",
        "native/pool.cc",
        "native/elementwise.cc",
        "native/tensorops.cc",
        "native/intgemm.cc",
        "native/amx.cc",
        "native/intmodel.cc",
        "native/conv3x3.cc",
        "native/intdw.cc",
        "native/intadd.cc",
        "native/intpool.cc",
        "native/signadd.cc",
        "native/xnorconv.cc",
        "native/optim.cc",
        "native/recurrent.cc",
        "native/irnn.cc",
        "native/intgru.cc",
        "native/intlmhead.cc",
        "native/inttransformer.cc",
        "native/transformer.cc",
        "native/batchnorm.cc",
        "native/decode-step.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      # NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS: when a worker thread is terminated while it is inside a
      # native call that then throws (its env is stopping), node-addon-api would abort the whole
      # process ("FATAL ERROR: Error::ThrowAsJavaScriptException napi_throw"); with it the throw is
      # dropped, as nothing can catch it in a stopping worker. Seen once in CI, src/distributed/threads.test.ts.
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags!": ["-O2"],
      "cflags_cc!": ["-O2", "-std=gnu++17", "-std=c++17", "-std=gnu++20"],
      "cflags_cc": ["-std=c++17", "-O3", "-fno-math-errno", "-fno-trapping-math", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-maybe-uninitialized"],
      "ldflags": ["-pthread"],
      "libraries": ["-pthread"]
    }
  ]
}
