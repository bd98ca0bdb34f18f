//! The `datasafed` binary: `dprepo datasafed` under the name KubeBlocks backup scripts
//! call. The same dispatch as `dprepo` (by `argv[0]`), so a symlink or copy of `dprepo`
//! named `datasafed` behaves the same.

fn main() -> std::process::ExitCode {
    dprepo_tools::main()
}
