"""The rules of the product. Pure modules import nothing from the database layer."""
