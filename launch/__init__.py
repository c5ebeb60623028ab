"""The driver: what runs where the user types. Hydra lives here and nowhere below."""
