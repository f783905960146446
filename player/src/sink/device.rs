//! The audio device sink, through cpal.
//!
//! The output callback runs [`RingReader::fill`] and, for integer devices,
//! converts in place through a scratch buffer allocated before the stream
//! starts: no allocation, lock, log or blocking in the callback. Device
//! errors are reported through a flag the decode thread checks, so a failed
//! device stops playback cleanly with the device's own message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample, StreamConfig};

use super::ring::{CONSUMER_STALL, Push, RingReader, RingWriter, ring};
use super::{Sink, SinkFormat};
use crate::error::{Error, Result};
use crate::stats::PlaybackStats;

/// A cpal output stream playing the ring.
pub struct DeviceSink {
    format: SinkFormat,
    writer: RingWriter,
    stats: Arc<PlaybackStats>,
    failed: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    /// The thread that owns the stream (a cpal stream need not be `Send`).
    device: Option<DeviceThread>,
}

/// The thread that opens the stream, starts it once the first audio is
/// ready and drops it (stopping it) when told to.
struct DeviceThread {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<()>,
}

const HINT: &str = "use --out null to play without sound, or --out FILE.wav to write a file";

/// Captures libasound's error printing on this thread while alive (ALSA
/// reports a missing card as a page of stderr lines before cpal returns
/// its own error).
struct QuietAlsa {
    #[cfg(target_os = "linux")]
    _guard: Option<std::rc::Rc<std::cell::RefCell<alsa::Output>>>,
}

impl QuietAlsa {
    fn new() -> Self {
        Self {
            #[cfg(target_os = "linux")]
            _guard: alsa::Output::local_error_handler().ok(),
        }
    }
}

/// One line per output device: its id, its description, and whether it is
/// the default.
pub fn list_devices() -> Result<Vec<String>> {
    let _quiet = QuietAlsa::new();
    let host = cpal::default_host();
    let default = host.default_output_device().and_then(|d| d.id().ok()).map(|id| id.to_string());
    let devices = host.output_devices().map_err(|e| Error::Device(e.to_string()))?;
    Ok(devices
        .map(|d| {
            let id = d.id().map_or_else(|_| "?".to_owned(), |id| id.to_string());
            let desc = d.description().map(|d| d.to_string()).unwrap_or_default();
            let mark = if Some(&id) == default.as_ref() { " (default)" } else { "" };
            format!("{id}{mark}  {desc}")
        })
        .collect())
}

fn find_device(name: Option<&str>) -> Result<cpal::Device> {
    let host = cpal::default_host();
    let hint = HINT;
    match name {
        None => host
            .default_output_device()
            .ok_or_else(|| Error::Device(format!("no default audio output device; {hint}"))),
        Some(name) => {
            let devices =
                host.output_devices().map_err(|e| Error::Device(format!("{e}; {hint}")))?;
            for d in devices {
                let id = d.id().map(|i| i.to_string()).unwrap_or_default();
                let desc = d.description().map(|d| d.to_string()).unwrap_or_default();
                if id == name || id.contains(name) || desc.contains(name) {
                    return Ok(d);
                }
            }
            Err(Error::Device(format!("no output device matches '{name}' (see `chorus devices`)")))
        }
    }
}

/// Picks a stream config: the track's own rate and channels if the device
/// takes them (no resampling), else the device's default.
fn choose_config(
    device: &cpal::Device,
    rate: u32,
    channels: usize,
) -> Result<(StreamConfig, SampleFormat)> {
    let rank = |f: SampleFormat| match f {
        SampleFormat::F32 => 0,
        SampleFormat::I16 => 1,
        SampleFormat::I32 => 2,
        _ => 9,
    };
    let mut best: Option<(StreamConfig, SampleFormat)> = None;
    if let Ok(ranges) = device.supported_output_configs() {
        for r in ranges {
            let fits = usize::from(r.channels()) == channels
                && r.min_sample_rate() <= rate
                && rate <= r.max_sample_rate()
                && rank(r.sample_format()) < 9;
            if fits && best.as_ref().is_none_or(|(_, f)| rank(r.sample_format()) < rank(*f)) {
                let c = r.with_sample_rate(rate);
                best = Some((c.config(), c.sample_format()));
            }
        }
    }
    if let Some(b) = best {
        return Ok(b);
    }
    let c = device.default_output_config().map_err(|e| Error::Device(e.to_string()))?;
    if rank(c.sample_format()) >= 9 {
        return Err(Error::Device(format!(
            "unsupported device sample format {}",
            c.sample_format()
        )));
    }
    Ok((c.config(), c.sample_format()))
}

fn build<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    mut reader: RingReader,
    failed: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
) -> Result<cpal::Stream>
where
    T: SizedSample + FromSample<f32>,
{
    // Scratch for integer devices, sized before the stream starts.
    let mut scratch = vec![0f32; 16_384];
    let on_error = move |e: cpal::Error| {
        // Not the data callback: reporting here may lock.
        if let Ok(mut slot) = failure.lock() {
            slot.get_or_insert_with(|| e.to_string());
        }
        failed.store(true, Ordering::Relaxed);
    };
    let stream = device
        .build_output_stream(
            *config,
            move |out: &mut [T], _: &cpal::OutputCallbackInfo| {
                for block in out.chunks_mut(scratch.len()) {
                    let tmp = &mut scratch[..block.len()];
                    reader.fill(tmp);
                    for (d, s) in block.iter_mut().zip(tmp.iter()) {
                        *d = T::from_sample(*s);
                    }
                }
            },
            on_error,
            None,
        )
        .map_err(|e| Error::Device(e.to_string()))?;
    Ok(stream)
}

/// Opens the device's stream (not started) for a ring of its format.
fn open_stream(
    name: Option<&str>,
    rate: u32,
    channels: usize,
    prebuffer: Duration,
    stats: &Arc<PlaybackStats>,
    failed: &Arc<AtomicBool>,
    failure: &Arc<Mutex<Option<String>>>,
) -> Result<(cpal::Stream, SinkFormat, RingWriter)> {
    let device = find_device(name)?;
    let (config, sample_format) = choose_config(&device, rate, channels)?;
    let format = SinkFormat { rate: config.sample_rate, channels: usize::from(config.channels) };
    let (writer, reader) = ring(format.rate, format.channels, prebuffer, stats.clone());
    let (f, fl) = (failed.clone(), failure.clone());
    let stream = match sample_format {
        SampleFormat::F32 => build::<f32>(&device, &config, reader, f, fl),
        SampleFormat::I16 => build::<i16>(&device, &config, reader, f, fl),
        _ => build::<i32>(&device, &config, reader, f, fl),
    }?;
    Ok((stream, format, writer))
}

impl DeviceThread {
    fn join(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.thread().unpark();
        let _ = self.handle.join();
    }
}

impl Drop for DeviceSink {
    fn drop(&mut self) {
        // Stops the stream before the ring's writer goes.
        if let Some(d) = self.device.take() {
            d.join();
        }
    }
}

impl DeviceSink {
    /// Opens the device and starts a stream that plays the ring.
    pub fn open(
        name: Option<&str>,
        rate: u32,
        channels: usize,
        prebuffer: Duration,
        stats: Arc<PlaybackStats>,
    ) -> Result<Self> {
        Self::open_on_thread(name, rate, channels, prebuffer, stats).map_err(|e| match e {
            Error::Device(msg) if !msg.contains("--out null") => {
                Error::Device(format!("cannot open the audio device ({msg}); {HINT}"))
            }
            e => e,
        })
    }

    /// Opens the stream on its own thread, which starts it when the first
    /// audio is ready ([`PlaybackStats::ready_to_start`]): the device's
    /// first period is then audio, not silence before it (a stream started
    /// at the open plays its first note up to a period late).
    fn open_on_thread(
        name: Option<&str>,
        rate: u32,
        channels: usize,
        prebuffer: Duration,
        stats: Arc<PlaybackStats>,
    ) -> Result<Self> {
        let failed = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (opened_tx, opened_rx) = std::sync::mpsc::sync_channel(1);
        let name = name.map(str::to_owned);
        let (f, fl, s, st) = (failed.clone(), failure.clone(), stop.clone(), stats.clone());
        let handle = std::thread::Builder::new()
            .name("chorus-audio-device".into())
            .spawn(move || {
                let opened = {
                    let _quiet = QuietAlsa::new();
                    open_stream(name.as_deref(), rate, channels, prebuffer, &st, &f, &fl)
                };
                let stream = match opened {
                    Ok((stream, format, writer)) => {
                        if opened_tx.send(Ok((format, writer))).is_err() {
                            return;
                        }
                        stream
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                while !s.load(Ordering::Relaxed) && !st.ready_to_start() {
                    std::thread::sleep(super::START_POLL);
                }
                if !s.load(Ordering::Relaxed) {
                    let _quiet = QuietAlsa::new();
                    if let Err(e) = stream.play() {
                        if let Ok(mut slot) = fl.lock() {
                            slot.get_or_insert_with(|| e.to_string());
                        }
                        f.store(true, Ordering::Relaxed);
                    }
                }
                while !s.load(Ordering::Relaxed) {
                    std::thread::park_timeout(Duration::from_millis(100));
                }
                drop(stream);
            })
            .map_err(|e| Error::Device(format!("cannot start the audio thread: {e}")))?;
        let device = DeviceThread { stop, handle };
        match opened_rx.recv() {
            Ok(Ok((format, writer))) => {
                Ok(Self { format, writer, stats, failed, failure, device: Some(device) })
            }
            Ok(Err(e)) => {
                device.join();
                Err(e)
            }
            Err(_) => {
                device.join();
                Err(Error::Device("the audio thread ended while opening the device".into()))
            }
        }
    }

    fn check(&self) -> Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            let msg = self.failure.lock().ok().and_then(|m| m.clone()).unwrap_or_default();
            return Err(Error::Device(format!("the audio device failed: {msg}")));
        }
        Ok(())
    }
}

impl Sink for DeviceSink {
    fn format(&self) -> SinkFormat {
        self.format
    }

    fn write(&mut self, samples: &[f32]) -> Result<()> {
        let (failed, stats) = (&self.failed, &self.stats);
        let pushed = self
            .writer
            .push_all(samples, &|| !failed.load(Ordering::Relaxed) && !stats.interrupted());
        self.check()?;
        if pushed == Push::Stalled {
            return Err(Error::Device(format!(
                "the audio device stopped taking samples for {} s",
                CONSUMER_STALL.as_secs()
            )));
        }
        Ok(())
    }

    fn begin_segment(&mut self, base: Duration, discard: bool) {
        self.writer.begin_segment(base, discard);
    }

    fn finish(&mut self) -> Result<()> {
        let (failed, stats) = (&self.failed, &self.stats);
        self.writer.drain(
            &|| !failed.load(Ordering::Relaxed) && !stats.stop.load(Ordering::Relaxed),
            Duration::from_secs(10),
        );
        // Let the device play out what it already took from the ring.
        std::thread::sleep(Duration::from_millis(50));
        self.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Instant;

    /// ALSA's `null` PCM (defined by alsa.conf on every Linux machine): the
    /// real cpal path, started only once its first audio is ready.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_device_stream_starts_when_the_first_audio_is_ready() {
        let gate = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(PlaybackStats::with_gate(Instant::now(), gate.clone()));
        let mut sink =
            DeviceSink::open(Some("null"), 48_000, 2, Duration::from_millis(20), stats.clone())
                .expect("ALSA's null device");
        let format = sink.format();
        sink.write(&vec![0.25; format.rate as usize / 10 * format.channels]).unwrap();
        super::super::assert_starts_at_the_first_audio(&stats, &gate);
        stats.stop.store(true, Relaxed);
        drop(sink);
    }
}
