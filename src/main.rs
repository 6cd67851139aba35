//! The `shoal` command line.

mod cli;
mod log;

fn main() {
    std::process::exit(cli::run());
}
