fn main() { airlock_tool::print_schemas::<hostile_fs::HostileFs>() }
