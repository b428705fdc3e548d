//! Wrap mode (`-- CMD ARGS`): the supervisor that starts, watches, respawns and stops the command,
//! its pure parts (`preload`: librebind.so and the command's environment), and `leftovers`, which
//! finds the daemons that left the command's process group.

pub mod leftovers;
pub mod preload;
pub mod spawn;
pub mod supervisor;
