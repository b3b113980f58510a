//! One series per value of one label, the values fixed when the metric is made: the hot path indexes an array
//! instead of looking a label set up in a map (prometheus-client's `Family` takes a lock and hashes the labels on
//! every update), and the number of series can never grow at run time.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// A metric per label value; clones share their values (prometheus-client's metrics are shared handles).
#[derive(Debug, Clone)]
pub(super) struct Labelled<M> {
    key: &'static str,
    series: Vec<(String, M)>,
}

impl<M> Labelled<M> {
    /// One `make()` per value of the label `key`, in this order.
    pub(super) fn new(key: &'static str, values: impl IntoIterator<Item = String>, make: impl Fn() -> M) -> Self {
        Self { key, series: values.into_iter().map(|value| (value, make())).collect() }
    }

    /// The metric of the `i`-th value.
    pub(super) fn get(&self, i: usize) -> &M {
        &self.series[i].1
    }

    /// Each value with its metric, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &M)> {
        self.series.iter().map(|(value, metric)| (value.as_str(), metric))
    }
}

impl<M: EncodeMetric + TypedMetric> EncodeMetric for Labelled<M> {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (value, metric) in &self.series {
            let labels = [(self.key, value.as_str())];
            metric.encode(encoder.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }
}
