//! Pure, lossless syntax for the files postrelay reads and edits: main.cf, master.cf and
//! lookup-table sources. No I/O here; everything is bytes in, bytes out, and
//! `render(parse(x)) == x` for every input.

pub mod lines;
pub mod maincf;
pub mod mastercf;
pub mod regexp;
pub mod table;
