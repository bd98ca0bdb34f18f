//! The `dprepo` binary (also `datasafed` when invoked under that name).

fn main() -> std::process::ExitCode {
    dprepo_tools::main()
}
