"""The camera service's page and HTTP API (http: in the service's YAML); see server.py."""
