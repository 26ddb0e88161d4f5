"""Alerts the gateway raises about itself: rules over what it knows, grouped notifications, acknowledgement."""
