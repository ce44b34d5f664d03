"""Who a caller is and what it may do: client tokens, the principal they name, and the keys that sign them."""
