"""The cloud: the controller, placement, the inventory, migrations, the image file server, seeding."""
