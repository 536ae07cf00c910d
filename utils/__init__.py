"""Small shared helpers: config, registry, errors, logging. No training logic lives here."""
