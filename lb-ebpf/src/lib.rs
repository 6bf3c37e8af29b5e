#![no_std]
// The XDP program is the `lb` binary (src/main.rs); this empty library lets
// lb-userspace depend on lb-ebpf so that cargo rebuilds it when it changes.
