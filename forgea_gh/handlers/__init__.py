"""What each job does: one module per concern, mapped by `router`."""
