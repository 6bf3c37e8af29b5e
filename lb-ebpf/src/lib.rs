#![no_std]
// The XDP objects are the binaries `lb` (src/main.rs, the director) and
// `lb-tools` (src/tools/main.rs, the lab's and the benchmark's programs); this
// empty library lets lb-userspace depend on lb-ebpf so that cargo rebuilds
// them when they change.
