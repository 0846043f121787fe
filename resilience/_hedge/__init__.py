"""``@hedged``: a second attempt beside a slow first one, the loser cancelled."""
