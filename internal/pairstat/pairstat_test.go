package pairstat

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestMedianInterval(t *testing.T) {
	var v []float64
	for i := 20; i >= 1; i-- {
		v = append(v, float64(i))
	}
	lo, hi := MedianInterval(v)
	// 20 values: the 6th and the 15th of them bound the median at 95 %.
	assert.Equal(t, []float64{6, 15}, []float64{lo, hi})
	assert.Equal(t, 20.0, v[0], "v is left as it was")

	lo, hi = MedianInterval([]float64{3, 1, 2, 7, 5, 4, 6})
	assert.Equal(t, []float64{1, 7}, []float64{lo, hi}, "too few values for less than their range")
	assert.Equal(t, 4.0, Median([]float64{3, 1, 2, 7, 5, 4, 6}))
	assert.Equal(t, 2.5, Quantile([]float64{4, 1, 3, 2}, 0.5))
}
