//! The `airlift` command line: argument parsing and printing; the work is in the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
