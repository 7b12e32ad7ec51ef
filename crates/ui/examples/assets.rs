//! Lists the page's assets with their size plain and gzipped (what a browser downloads), and
//! the headers they are served with. `cargo run -p caravan-ui --example assets`.

use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut total = 0;
    for a in caravan_ui::ASSETS {
        let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        w.write_all(a.body)?;
        let gz = w.finish()?.len();
        total += gz;
        println!(
            "{}{:<12} {:<32} {:>7} B, {:>6} B gzipped",
            caravan_ui::PREFIX,
            a.name,
            a.content_type,
            a.body.len(),
            gz
        );
    }
    println!("total gzipped: {total} B (budget 204800 B)");
    for (name, value) in caravan_ui::SECURITY_HEADERS {
        println!("{name}: {value}");
    }
    if total > 200 * 1024 {
        return Err(format!("the page weighs {total} B gzipped, over 200 KB").into());
    }
    Ok(())
}
