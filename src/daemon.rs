//! The daemon's event loop: one owner of the inventory, discovery state and controller.
