//! Varied PNG images for the optipng tests and benchmark (the benchmark includes this file
//! from `examples/gen_pngs.rs`).

use std::fs;
use std::path::Path;

/// Writes `count` PNG images that differ in size, colour type, bit depth and content.
pub fn make_pngs(dir: &Path, count: usize) -> Vec<String> {
    use png::{BitDepth, ColorType};
    let kinds = [
        (ColorType::Rgb, BitDepth::Eight, 3),
        (ColorType::Rgba, BitDepth::Eight, 4),
        (ColorType::Grayscale, BitDepth::Eight, 1),
        (ColorType::GrayscaleAlpha, BitDepth::Eight, 2),
        (ColorType::Rgb, BitDepth::Sixteen, 6),
    ];
    (0..count)
        .map(|i| {
            let (color, depth, bpp) = kinds[i % kinds.len()];
            let (width, height) = (8 + (i * 7) % 90, 8 + (i * 13) % 70);
            let mut data = Vec::with_capacity(width * height * bpp);
            for y in 0..height {
                for x in 0..width {
                    for c in 0..bpp {
                        // Gradients, stripes and noise, differently mixed per image.
                        let noise = (x * 31 + y * 17 + c * 7 + i * 101) % 251;
                        let v = match i % 3 {
                            0 => (x * 255 / width) as u8,
                            1 => {
                                if (x / (1 + i % 5)) % 2 == 0 {
                                    20
                                } else {
                                    230
                                }
                            }
                            _ => noise as u8,
                        };
                        data.push(v.wrapping_add((c * 40) as u8));
                    }
                }
            }
            let name = format!("img{i:03}.png");
            let file = fs::File::create(dir.join(&name)).expect("create png");
            let mut encoder =
                png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
            encoder.set_color(color);
            encoder.set_depth(depth);
            // Fast, weak compression leaves optipng real work to do.
            encoder.set_compression(png::Compression::Fast);
            let mut writer = encoder.write_header().expect("png header");
            writer.write_image_data(&data).expect("png data");
            writer.finish().expect("png finish");
            name
        })
        .collect()
}
