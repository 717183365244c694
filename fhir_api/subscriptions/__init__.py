"""R4 Subscriptions with rest-hook channels: notifications queued with the change, delivered durably."""
