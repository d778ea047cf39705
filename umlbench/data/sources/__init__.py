"""The eight real datasets of the UML benchmark, one module each; importing registers them."""
