fn main() {
    std::process::exit(bench::cli_main(std::env::args().collect()))
}
