"""The lab domain, pure: lifecycle rules and what a push means for the ledger."""
