fn main() -> std::process::ExitCode {
    session_reaper::allocator::tune();
    session_reaper::cli::main()
}
