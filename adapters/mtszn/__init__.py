"""МТСЗН (labour and social protection, employment centres): REST/JSON, employment track and social contract."""
