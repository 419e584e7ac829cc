// Directive prelude: the `f16` extension (WebGPU feature "shader-f16"), for lib/weights_native_f16.wgsl.
// Directives must precede every declaration, so directive preludes come first (ops.py orders them).
enable f16;
