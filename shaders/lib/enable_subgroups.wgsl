// Directive prelude: the `subgroups` extension (WebGPU feature "subgroups"), for lib/reduce_subgroup.wgsl.
// Directives must precede every declaration, so directive preludes come first (ops.py orders them).
// wgpu_exec.py drops this line: Naga offers subgroup operations with the device feature, without the directive.
enable subgroups;
