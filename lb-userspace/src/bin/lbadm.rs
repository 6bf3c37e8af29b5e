//! lbadm: the ipvsadm-compatible CLI for lbd, and the real-server helper.

fn main() -> std::process::ExitCode {
    lb_userspace::cli::main()
}
