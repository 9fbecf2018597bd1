"""Whether they may, and what it cost: the limit layer, plans, headers, token estimates."""
