//! The `quorate` command-line inspector; see `quorate --help`.

fn main() -> std::process::ExitCode {
    quorate::cli::main()
}
