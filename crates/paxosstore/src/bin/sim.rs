fn main() {
    std::process::exit(sim::cli::main())
}
