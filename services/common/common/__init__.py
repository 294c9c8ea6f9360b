"""What the services share: the contract (names they agree on), result tables, and the HTTP edge."""
