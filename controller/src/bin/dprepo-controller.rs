//! The `dprepo-controller` binary.

fn main() -> anyhow::Result<()> {
    Ok(())
}
