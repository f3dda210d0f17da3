"""CLI commands, one module each (discovered by ``domainbed_sc.cli``)."""
