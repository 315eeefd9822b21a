//! `petrel-bench`: see `petrel-bench --help` and BENCHMARKS.md.

fn main() -> std::process::ExitCode {
    petrel_benches::load::cli::main()
}
