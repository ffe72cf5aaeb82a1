fn main() { airlock_tool::print_schemas::<exchange_rates::ExchangeRates>() }
