fn main() { airlock_tool::print_schemas::<hostile::Hostile>() }
