fn main() -> std::process::ExitCode {
    session_reaper::cli::main()
}
