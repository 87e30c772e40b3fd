"""Authentication: password hashing, signed bearer tokens, and request principals."""
