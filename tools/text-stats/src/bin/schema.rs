fn main() { airlock_tool::print_schemas::<text_stats::TextStats>() }
