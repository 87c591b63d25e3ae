//! placeholder, see DESIGN
