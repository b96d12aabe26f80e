"""One module per ``ffem`` command; ``ffem_cli.cli`` registers them."""
