"""Alert webhooks: the gateway's own alert notifications as signed JSON POSTs (channels in alerts.yaml)."""
