"""Model packages and their registry, one set of rules for the CLI, the admin API and the workers:
the manifest (what a package accepts and what its outputs mean), packages (a directory or an
uploaded archive into object storage and the `models` table), and the registry (activate,
deactivate, retire, roll back, the active version)."""
